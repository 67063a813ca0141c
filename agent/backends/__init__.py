"""Runtime backends behind one interface (emulator, Lava, ONNX Runtime)."""
