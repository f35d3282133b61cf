"""The CRI streaming server (exec, attach, port-forward over SPDY/3.1 and WebSocket).

* :mod:`.server`: the asyncio HTTP/1.1 server and the per-connection sessions;
* :mod:`.session`: the handler interface the CRI service implements;
* :mod:`.spdy`, :mod:`.websocket`, :mod:`.http`: sans-IO protocol codecs;
* :mod:`.remotecommand`: Kubernetes' subprotocol facts (Status JSON, resize);
* :mod:`.tokens`: one-time URL tokens;
* :mod:`.testing`: the client side, for tests.
"""
