"""Object storage through fsspec: reads, writes, presigned URLs, streaming."""
