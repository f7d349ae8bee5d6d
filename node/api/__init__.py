"""The gRPC edge for clients: servers, the ledger and registry services, and the mapping of
refusals to status codes. Protobuf stays here (and in the peer transport)."""
