"""The networks: layers, style-conditioning heads, WaveGAN, SpecGAN, the extra critics, and the registry of model kinds."""
