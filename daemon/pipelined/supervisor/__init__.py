"""The supervisor: one control loop owns every change (`loop`), the read side and config writes
of the `Control` the API talks to (`queries`, `control`), one slot per pipeline name (`slot`),
reloads (`reload`) and conf.d watching (`watcher`).
"""
