"""containerd 2.x's image paths in the daemon: the Streaming and Transfer services.

- :mod:`.streams`: the stream manager (``io.containerd.streaming.v1.manager``):
  streams the client opens on the Streaming service, by namespace and id.
- :mod:`.local`: the local transferrer (``io.containerd.transfer.v1.local``):
  registry pull and push, archive import and export, tag, with the code of
  :mod:`pycontainerd.remotes` run against the daemon's own stores.
- :mod:`.service`: the gRPC services ``io.containerd.grpc.v1.{streaming,transfer}``.
"""
