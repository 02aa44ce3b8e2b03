"""Sound from a trained generator: the synthesizer, exported model files, batch rendering and previews."""
