"""The physics around a reconstruction: simulated crystals (continuum and atomistic), preparation of
measured patterns, and post-processing into displacement and strain.  Each recipe section's schema
(``data.simulate``, ``data.prepare``, ``geometry``, ``postprocess``) lives with the code that consumes it.
"""
