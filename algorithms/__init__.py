"""Built-in algorithms of cdi-plugins, installed as ``cdi_plugins.algorithms``.

Each module here is a plugin registered through the ``cdi_plugins`` entry-point
group and uses only the framework's public API, exactly as a third party would.
"""
