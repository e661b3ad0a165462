"""The semantic index package: embedders, chunker, vector index, blind tokens; later the indexer.

Each module owns one thing: `embedder` turns text into unit vectors (the only module that imports
sentence_transformers, lazily); `chunker` decides which files are text and cuts their text into Markdown-aware
chunks that fit an embedder; `vectors` is the nearest-neighbour index; `tokens` the blind full-text tokens.

Importing this package is cheap: nothing here imports torch until an embedder model is actually loaded.
"""
