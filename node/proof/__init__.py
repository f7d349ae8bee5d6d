"""The verifier's trusted core: RFC 6962 Merkle hashing and proofs, the state tree's hashing
rules and proof checks, certified proof bundles and `kledger verify`. It imports neither
plyvel nor grpc (tests/test_layout.py), so a verifier runs it without trusting any node."""
