"""Entry modules: ESPnet's own programs with the plugin registered first."""
