"""How user callables are loaded and called: `loading.load_callable` imports a `module:attr`,
`invoke.Invoker` is the one place that calls user code (functions, generators, async, classes
with setup()/close(), the `ctx` object). Both the engine's threads and the worker processes
use it.
"""
