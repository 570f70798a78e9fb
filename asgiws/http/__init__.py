"""HTTP/1.1 on httptools: `protocol.HttpProtocol` parses requests on a connection, serves the ASGI
`http` scope (one `cycle.RequestCycle` per request) and hands WebSocket upgrades over to the
WebSocket layer."""
