"""Numerics shared by the framework and the plugins: the array backend and FFT engines, supports and
shrink-wrap, Fourier-space resampling and oversampling, error metrics.  Knows nothing of plugins or recipes.
"""
