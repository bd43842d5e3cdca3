"""The build engine: a Buildfile's stages planned and run, step by step, into a store.

Nothing is imported here, so that a fully cached build (answered by `layerbuild.cache`'s
build records) loads none of the engine; import the module you need.
"""
