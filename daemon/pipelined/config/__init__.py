"""Configuration: TOML → frozen, validated specs; nothing after this layer reads files.

`spec` (the frozen dataclasses), `durations` (`"5s"`, `"1MiB"`), `load` (a pipeline file →
`PipelineSpec` + every `Problem`), its helpers `lines`, `values`, `stage`, `code`, `callables`
(importing and checking user code) and `settings` (the daemon settings file).
"""
