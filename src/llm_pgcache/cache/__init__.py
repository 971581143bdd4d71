"""The façade: `Cache`, assembled from its use cases (reads, writes, maintenance) over
the state they share (`state`), and what opening, guarding and measuring it takes."""
