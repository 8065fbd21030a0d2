# Cython finds a module's .pxd by the module's name (sqlite_tensor._engine), beside its
# .pyx; the engine's interface lives in engine.pxd (the plain name, which `cython
# engine.pyx` finds itself).
include "engine.pxd"
