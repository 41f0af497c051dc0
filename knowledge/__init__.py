"""Knowledge: embedders, chunking, the indexing worker and task context (issue #11).

The read model lives in ``projections.knowledge``; this package holds what turns documents into recorded vectors.
"""
