"""Numerics shared by the framework and the plugins: the array backend and FFT engines (``backend``), supports
and shrink-wrap (``support``), the oversampling estimate, crop/pad and Fourier resampling (``fourier``),
error metrics (``metrics``).  Knows nothing of plugins or recipes.
"""
