"""Generated gRPC stubs (see grpc_service.proto); do not edit."""
