"""The HNSW tuner behind `clawfs bench hnsw`: which M / ef_construction / ef should a store use, and what does it
cost?  A library: mountd/bench_cli.py is only its command line.

Datasets (datasets.py, storage.py; each shuffled with a fixed seed, rows L2-normalised, so cosine = dot product):
    * `--store`: the store's own vectors, decrypted in memory only (nothing plaintext is ever written out);
    * `debian-docs`: paragraphs of /usr/share/doc (README, changelog, copyright, ... gz allowed) and the man pages
      (troff stripped: corpus.py), embedded with the store's embedder (default all-MiniLM-L6-v2) and cached under
      ~/.cache/clawfs/bench/ keyed by corpus fingerprint and model (public text only);
    * a `.npy` file of float32 (n, d) vectors;
    * `synthetic`: seeded clustered vectors of low intrinsic dimension (like embeddings), up to 1M.

For each size n the dataset is split into n indexed vectors and held-out queries (never in the index): a 100k
run embeds 101k paragraphs.  Ground truth is exact numpy top-k, computed once per size (measure.py).  The sweep
(sweep.py) builds one HNSW graph per (M, ef_construction) with ef_construction >= 2*M (pgvector's own rule),
cheapest first, always including the two anchors (pgvector's defaults m=16, ef_construction=64, ef_search=40,
and hnswlib's M=16, ef_construction=200, ef=10: config.py), and searches each at rising ef until recall@k
reaches 0.999 (the anchors' graphs at every ef): recall@k as ann-benchmarks defines it (a returned neighbour is
a hit when its distance is within the true k-th neighbour's distance + 1e-3), single-query and batch QPS; per
graph: build time, memory and single-vector add latency.  The delete test (10% of the vectors `mark_deleted`,
then added back under new ids into the freed slots: recall afterwards, and the latency of each re-add) runs on
the exact index, the anchors' graphs and the recommended graph (recommend.py), which are kept in memory until
the sweep ends; every other graph is freed once searched.  Exact search is always a row.  results.json
(report.py) records the wall time of every phase and the load average at its start and end (timing.py: other
work on the machine slows a run down; the load says by how much).

hnswlib is driven only through `clawfs.index.vectors.VectorIndex`, the project's one hnswlib importer; the store
only through storage.py.
"""
