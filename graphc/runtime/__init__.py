"""Device runtimes: thin Python layers over vendor driver APIs (loaded lazily,
so importing graphc never needs them). :mod:`graphc.runtime.cuda` is the
CUDA driver API through ctypes."""
