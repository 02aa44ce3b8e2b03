"""Training: the GAN objectives, the pure jitted step, the loop and its hooks, monitoring and multi-process set-up."""
