"""The host integration of `pipelined run`: wiring the pieces (`run`), logging (`logs`) and
sd_notify (`notify`).
"""
