"""The Open Inference Protocol over gRPC: generated messages, codec, service and server."""
