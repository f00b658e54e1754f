"""Conditional generative surrogates (flows, VAE, diffusion, GAN), their training, saving and export.

Work in progress (issue 4): serialisation, the trainer and the conditional spline flow land first.
"""
