"""The local engine: decode -> segment -> smooth -> composite -> encode, streamed frame by frame."""
