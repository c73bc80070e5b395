"""Writes the invalid-file corpus (tests/unit/config/corpus/NN_name.toml) with its `# expect:` lines.

Run it after changing an entry: .venv/bin/python tests/unit/config/corpus/generate.py
Every file starts with `python_path = ["pkgs"]` (callables in corpus/pkgs/) and is a small valid
pipeline but for the one mistake named in its expectation.
"""

from pathlib import Path

OUT = Path(__file__).resolve().parent
PP = 'python_path = ["pkgs"]\n'
SRC = '[[stage]]\nname = "src"\nkind = "producer"\ncall = "corpus_mods:produce"\n'
SINK = '[[stage]]\nname = "sink"\nkind = "consumer"\ncall = "corpus_mods:consume"\n'


def proc(name: str = "work", call: str = "corpus_mods:process", extra: str = "") -> str:
    return f'[[stage]]\nname = "{name}"\ncall = "{call}"\n{extra}'


C: dict[str, tuple[list[str], str]] = {}


def add(name: str, expects: str, body: str) -> None:
    C[name] = ([expects] if isinstance(expects, str) else expects, body)


# -- TOML syntax (line known) ---------------------------------------------------------------
add("01_toml_missing_equals", ":7: 01_toml_missing_equals: invalid TOML:", PP + SRC[:-1] + '\ncall "x"\n')
add(
    "02_toml_unclosed_string",
    ":3: 02_toml_unclosed_string: invalid TOML:",
    PP + 'description = "never closed\n' + SRC,
)
add("03_toml_duplicate_key", ":7: 03_toml_duplicate_key: invalid TOML:", PP + SRC + 'name = "again"\n' + SINK)
add("04_toml_bad_table", ":3: 04_toml_bad_table: invalid TOML:", PP + "[[stage]\n" + 'name = "x"\n')
# -- unknown keys at every level -------------------------------------------------------------
add(
    "05_unknown_pipeline_key",
    ':3: 05_unknown_pipeline_key/max_thread: unknown key "max_thread" (did you mean "max_threads"?)',
    PP + "max_thread = 8\n" + SRC + SINK,
)
add(
    "06_unknown_stage_key",
    ':10: 06_unknown_stage_key/enrich/thread: unknown key "thread" (did you mean "threads"?)',
    PP + SRC + proc("enrich", extra="thread = 4\n") + SINK,
)
add(
    "07_unknown_hook_key",
    ':4: 07_unknown_hook_key/hooks/befor_run: unknown key "befor_run" (did you mean "before_run"?)',
    PP + '[hooks]\nbefor_run = "corpus_mods:hook_run"\n' + SRC + SINK,
)
add(
    "08_unknown_stage_hook_key",
    ':11: 08_unknown_stage_hook_key/work/hooks/on_eror: unknown key "on_eror" (did you mean "on_error"?)',
    PP + SRC + proc() + '[stage.hooks]\non_eror = "corpus_mods:hook_run"\n' + SINK,
)
add(
    "09_unknown_nested_key",
    ':12: 09_unknown_nested_key/inner/cal: unknown key "cal" (did you mean "call"?)',
    PP
    + SRC
    + '[[stage]]\nname = "outer"\nkind = "pipeline"\n  [[stage.stage]]\n  name = "inner"\n  cal = "corpus_mods:process"\n'
    + SINK,
)
add(
    "10_unknown_deep_nested_key",
    ':16: 10_unknown_deep_nested_key/deep/treads: unknown key "treads" (did you mean "threads"?)',
    PP
    + SRC
    + '[[stage]]\nname = "l1"\nkind = "pipeline"\n[[stage.stage]]\nname = "l2"\nkind = "pipeline"\n[[stage.stage.stage]]\nname = "deep"\ncall = "corpus_mods:process"\ntreads = 2\n'
    + SINK,
)
add(
    "11_unknown_key_no_suggestion",
    '11_unknown_key_no_suggestion/colour: unknown key "colour"\n# expect-not: did you mean',
    PP + 'colour = "blue"\n' + SRC + SINK,
)
# -- wrong types and ranges ------------------------------------------------------------------
add(
    "12_max_threads_string",
    ':3: 12_max_threads_string/max_threads: must be an integer >= 1, got string "8"',
    PP + 'max_threads = "8"\n' + SRC + SINK,
)
add(
    "13_enabled_string",
    '13_enabled_string/enabled: must be true or false, got string "yes"',
    PP + 'enabled = "yes"\n' + SRC + SINK,
)
add(
    "14_max_retries_negative",
    "14_max_retries_negative/max_retries: must be an integer >= 0, got integer -1",
    PP + "max_retries = -1\n" + SRC + SINK,
)
add(
    "15_threads_zero",
    ":10: 15_threads_zero/work/threads: must be an integer >= 1, got integer 0",
    PP + SRC + proc(extra="threads = 0\n") + SINK,
)
add(
    "16_threads_bool",
    "16_threads_bool/work/threads: must be an integer >= 1, got boolean true",
    PP + SRC + proc(extra="threads = true\n") + SINK,
)
add(
    "17_on_full_unknown",
    '17_on_full_unknown/on_full: must be one of "block", "drop_oldest", "reject", got string "drop" (did you mean "block"?)'.replace(
        ' (did you mean "block"?)', ""
    ),
    PP + 'on_full = "drop"\n' + SRC + SINK,
)
add(
    "18_kind_typo",
    '18_kind_typo/work/kind: must be one of "producer", "processor", "consumer", "accumulator", "pipeline", got string "procesor" (did you mean "processor"?)',
    PP + SRC + proc(extra='kind = "procesor"\n') + SINK,
)
add(
    "19_queue_size_float",
    "19_queue_size_float/work/queue_size: must be an integer >= 1, got float 10.5",
    PP + SRC + proc(extra="queue_size = 10.5\n") + SINK,
)
add(
    "20_description_number",
    "20_description_number/description: must be a string, got integer 5",
    PP + "description = 5\n" + SRC + SINK,
)
add(
    "21_python_path_string",
    '21_python_path_string/python_path: must be an array of non-empty strings, got string "pkgs"',
    'python_path = "pkgs"\n' + SRC.replace("corpus_mods:produce", "json:loads"),
)
add(
    "22_args_not_table",
    "22_args_not_table/work/args: must be a table, got integer 5",
    PP + SRC + proc(extra="args = 5\n") + SINK,
)
add(
    "23_to_not_list",
    '23_to_not_list/src/to: must be an array of non-empty strings, got string "sink"',
    PP + SRC + 'to = "sink"\n' + SINK,
)
# -- durations -------------------------------------------------------------------------------
add(
    "24_bad_retry_backoff",
    '24_bad_retry_backoff/retry_backoff: must be a duration like "250ms", "5s", "2m", "1h" or a number of seconds, got string "5 sec"',
    PP + 'retry_backoff = "5 sec"\n' + SRC + SINK,
)
add(
    "25_bad_max_wait",
    "25_bad_max_wait/batch/max_wait: must be a duration like",
    PP + SRC + '[[stage]]\nname = "batch"\nkind = "accumulator"\nmax_wait = "soon"\n' + SINK,
)
add(
    "26_drain_timeout_zero",
    "26_drain_timeout_zero/drain_timeout: must be a duration > 0, got integer 0",
    PP + "drain_timeout = 0\n" + SRC + SINK,
)
add(
    "27_negative_duration",
    "27_negative_duration/work/retry_backoff: must be a duration like",
    PP + SRC + proc(extra="retry_backoff = -1\n") + SINK,
)
# -- calls -----------------------------------------------------------------------------------
add(
    "28_missing_call",
    '28_missing_call/work: missing required key "call"',
    PP + SRC + '[[stage]]\nname = "work"\n' + SINK,
)
add(
    "29_call_on_accumulator",
    '29_call_on_accumulator/batch/call: "call" only applies to kind = "producer", "processor" or "consumer" (this stage\'s kind is "accumulator")',
    PP + SRC + '[[stage]]\nname = "batch"\nkind = "accumulator"\ncall = "corpus_mods:process"\n' + SINK,
)
add(
    "30_call_on_pipeline",
    '30_call_on_pipeline/box/call: "call" only applies to',
    PP
    + SRC
    + '[[stage]]\nname = "box"\nkind = "pipeline"\ncall = "corpus_mods:process"\n[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n'
    + SINK,
)
add(
    "31_call_bad_format",
    '31_call_bad_format/work/call: must be "package.module:attribute", got "corpus_mods.process"',
    PP + SRC + proc(call="corpus_mods.process") + SINK,
)
add(
    "32_call_module_missing",
    ':9: 32_call_module_missing/work/call: module "no_such_module_xyz" not found',
    PP + SRC + proc(call="no_such_module_xyz:fn") + SINK,
)
add(
    "33_call_attribute_missing",
    '33_call_attribute_missing/work/call: module "corpus_mods" has no attribute "nope"',
    PP + SRC + proc(call="corpus_mods:nope") + SINK,
)
add(
    "34_call_not_callable",
    '34_call_not_callable/work/call: "corpus_mods:not_callable" is not callable (it is int 42)',
    PP + SRC + proc(call="corpus_mods:not_callable") + SINK,
)
add(
    "35_call_import_raises",
    '35_call_import_raises/work/call: importing module "corpus_broken" failed: RuntimeError: boom at import',
    PP + SRC + proc(call="corpus_broken:fn") + SINK,
)
add(
    "36_call_import_exits",
    '36_call_import_exits/work/call: importing module "corpus_exits" failed: SystemExit: 3',
    PP + SRC + proc(call="corpus_exits:fn") + SINK,
)
# -- signatures and args ---------------------------------------------------------------------
add(
    "37_producer_positional",
    '37_producer_positional/src/call: a producer must not have a required positional parameter, but corpus_mods:produce_needs requires "item"',
    PP + SRC.replace("corpus_mods:produce", "corpus_mods:produce_needs") + SINK,
)
add(
    "38_processor_takes_nothing",
    "38_processor_takes_nothing/work/call: a processor is called with the item as one positional argument, but corpus_mods:process_none takes none",
    PP + SRC + proc(call="corpus_mods:process_none") + SINK,
)
add(
    "39_consumer_two_positional",
    '39_consumer_two_positional/sink/call: a consumer is called with the item as its only positional argument, but corpus_mods:process_two also requires "other"',
    PP + SRC + SINK.replace("corpus_mods:consume", "corpus_mods:process_two"),
)
add(
    "40_unknown_arg",
    '40_unknown_arg/work/args: corpus_mods:process does not accept argument "limit"',
    PP + SRC + proc(extra="args = { limit = 5 }\n") + SINK,
)
add(
    "41_class_init_unknown_arg",
    '41_class_init_unknown_arg/score/args: corpus_mods:Scorer.__init__ does not accept argument "wieght"',
    PP + SRC + proc("score", "corpus_mods:Scorer", "args = { wieght = 2 }\n") + SINK,
)
add(
    "42_class_without_call",
    "42_class_without_call/work/call: class corpus_mods:NoCall has no __call__ method",
    PP + SRC + proc(call="corpus_mods:NoCall") + SINK,
)
add(
    "43_missing_keyword_arg",
    '43_missing_keyword_arg/work/args: corpus_mods:process_kw is missing required argument "factor"',
    PP + SRC + proc(call="corpus_mods:process_kw") + SINK,
)
add(
    "44_emit_to_unknown",
    '44_emit_to_unknown/work/call: corpus_mods:emits_unknown calls emit_to("ghost"), but "ghost" is not a stage of this pipeline',
    PP + SRC + proc(call="corpus_mods:emits_unknown") + SINK,
)
# -- names -----------------------------------------------------------------------------------
add(
    "45_duplicate_stage_name",
    ':8: 45_duplicate_stage_name/src: duplicate stage name "src" (first defined on line 3)',
    PP + SRC + proc("src") + SINK,
)
add(
    "46_duplicate_nested_name",
    ':11: 46_duplicate_nested_name/sink: duplicate stage name "sink" (first defined on line 3)',
    PP
    + SINK.replace('"sink"', '"sink"').replace("consumer", "producer").replace("consume", "produce")
    + '[[stage]]\nname = "box"\nkind = "pipeline"\n  [[stage.stage]]\n  name = "sink"\n  kind = "consumer"\n  call = "corpus_mods:consume"\n',
)
add(
    "47_bad_stage_name",
    '47_bad_stage_name/stage #2/name: invalid stage name "two words": use letters, digits, "_" and "-"',
    PP + SRC + proc("two words") + SINK,
)
add(
    "48_missing_stage_name",
    '48_missing_stage_name/stage #2: missing required key "name"',
    PP + SRC + '[[stage]]\ncall = "corpus_mods:process"\n' + SINK,
)
add("49_Bad_Pipeline_Name", 'invalid pipeline name "49_Bad_Pipeline_Name"', PP + SRC + SINK)
add(
    "50_no_stages",
    "50_no_stages: a pipeline needs at least one [[stage]]",
    PP + 'description = "nothing to do"\n',
)
add(
    "51_stage_not_array",
    "51_stage_not_array/stage: must be an array of tables ([[stage]])",
    PP + 'stage = "src"\n',
)
# -- kind rules and nesting ------------------------------------------------------------------
add(
    "52_nested_without_children",
    "52_nested_without_children/box: a nested pipeline needs at least one [[stage.stage]]",
    PP + SRC + '[[stage]]\nname = "box"\nkind = "pipeline"\n' + SINK,
)
add(
    "53_nested_under_processor",
    '53_nested_under_processor/work/stage: nested stages ([[stage.stage]]) only apply to kind = "pipeline" (this stage\'s kind is "processor")',
    PP + SRC + proc() + '[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n' + SINK,
)
add(
    "54_max_size_on_processor",
    '54_max_size_on_processor/work/max_size: "max_size" only applies to kind = "accumulator" (this stage\'s kind is "processor")',
    PP + SRC + proc(extra="max_size = 10\n") + SINK,
)
add(
    "55_max_wait_on_consumer",
    '55_max_wait_on_consumer/sink/max_wait: "max_wait" only applies to kind = "accumulator" (this stage\'s kind is "consumer")',
    PP + SRC + SINK + 'max_wait = "1s"\n',
)
add(
    "56_mode_on_processor",
    '56_mode_on_processor/work/mode: "mode" only applies to kind = "pipeline"',
    PP + SRC + proc(extra='mode = "parallel"\n') + SINK,
)
add(
    "57_bad_nested_mode",
    '57_bad_nested_mode/box/mode: must be one of "sequential", "parallel", got string "concurrent"',
    PP
    + SRC
    + '[[stage]]\nname = "box"\nkind = "pipeline"\nmode = "concurrent"\n[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n'
    + SINK,
)
add(
    "58_auto_start_on_processor",
    '58_auto_start_on_processor/work/auto_start: "auto_start" only applies to kind = "producer" (this stage\'s kind is "processor")',
    PP + SRC + proc(extra="auto_start = false\n") + SINK,
)
add(
    "59_threads_and_processes",
    '59_threads_and_processes/work/processes: "threads" and "processes" are exclusive',
    PP + SRC + proc(extra="threads = 2\nprocesses = 2\n") + SINK,
)
add(
    "60_process_mode_without_processes",
    '60_process_mode_without_processes/work/process_mode: "process_mode" only applies to stages with "processes"',
    PP + SRC + proc(extra='process_mode = "fork_per_item"\n') + SINK,
)
add(
    "61_bad_start_method",
    '61_bad_start_method/work/start_method: must be one of "fork", "forkserver", "spawn", got string "thread"',
    PP + SRC + proc(extra='processes = 2\nstart_method = "thread"\n') + SINK,
)
add(
    "62_weights_without_weighted",
    '62_weights_without_weighted/src/weights: "weights" only apply with fanout = "weighted"',
    PP
    + SRC
    + 'to = ["a", "b"]\nweights = { a = 1, b = 2 }\n'
    + proc("a", extra='to = ["sink"]\n')
    + proc("b")
    + SINK,
)
add(
    "63_weighted_without_weights",
    '63_weighted_without_weights/src/fanout: fanout = "weighted" needs "weights"',
    PP
    + SRC
    + 'to = ["a", "b"]\nfanout = "weighted"\n'
    + proc("a", extra='to = ["sink"]\n')
    + proc("b")
    + SINK,
)
add(
    "64_weight_zero",
    "64_weight_zero/src/weights/a: weight must be a positive integer, got integer 0",
    PP
    + SRC
    + 'to = ["a", "b"]\nfanout = "weighted"\nweights = { a = 0, b = 2 }\n'
    + proc("a", extra='to = ["sink"]\n')
    + proc("b")
    + SINK,
)
add(
    "65_processes_on_accumulator",
    '65_processes_on_accumulator/batch/processes: "processes" only applies to',
    PP + SRC + '[[stage]]\nname = "batch"\nkind = "accumulator"\nprocesses = 2\n' + SINK,
)
add(
    "66_nested_max_threads_zero",
    "66_nested_max_threads_zero/box/max_threads: must be an integer >= 1, got integer 0",
    PP
    + SRC
    + '[[stage]]\nname = "box"\nkind = "pipeline"\nmax_threads = 0\n[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n'
    + SINK,
)
# -- hooks -----------------------------------------------------------------------------------
add(
    "67_hook_bad_reference",
    '67_hook_bad_reference/hooks/after_fork: must be "package.module:function", got string "reconnect"',
    PP + '[hooks]\nafter_fork = "reconnect"\n' + SRC + SINK,
)
add(
    "68_hook_module_missing",
    '68_hook_module_missing/work/hooks/on_error: module "no_such_hooks" not found',
    PP + SRC + proc() + '[stage.hooks]\non_error = "no_such_hooks:log"\n' + SINK,
)
add(
    "69_hook_wrong_signature",
    "69_hook_wrong_signature/hooks/on_error: hook on_error is called with (item, error, stage), which corpus_mods:hook_noargs does not accept",
    PP + '[hooks]\non_error = "corpus_mods:hook_noargs"\n' + SRC + SINK,
)
add(
    "70_hooks_not_table",
    "70_hooks_not_table/hooks: must be a table, got string",
    PP + 'hooks = "corpus_mods:hook_run"\n' + SRC + SINK,
)
# -- routing (pipelined.graph.routing) -------------------------------------------------------------
add(
    "71_routing_unknown_to",
    '71_routing_unknown_to/src/to: unknown stage "snk" (did you mean "sink"?)',
    PP + SRC + 'to = ["snk"]\n' + SINK,
)
add(
    "72_routing_unknown_from",
    '72_routing_unknown_from/sink/from: unknown stage "scr"',
    PP + SRC + SINK + 'from = ["scr"]\n',
)
add(
    "73_routing_cycle",
    "73_routing_cycle/a: cycle: a -> b -> a",
    PP + SRC + proc("a", extra='to = ["b"]\n') + proc("b", extra='to = ["a", "sink"]\n') + SINK,
)
add(
    "74_routing_edge_into_producer",
    '74_routing_edge_into_producer/work/to: "src" is a producer; producers take no input',
    PP + SRC + proc(extra='to = ["src"]\n') + SINK,
)
add(
    "75_routing_edge_out_of_consumer",
    '75_routing_edge_out_of_consumer/sink/to: "sink" is a consumer; consumers send nothing downstream',
    PP + SRC + SINK + 'to = ["last"]\n' + proc("last"),
)
add(
    "76_routing_producer_no_downstream",
    '76_routing_producer_no_downstream/src: producer "src" has no downstream stage',
    PP + SRC,
)
add(
    "77_routing_from_on_producer",
    '77_routing_from_on_producer/src/from: producer "src" cannot receive items from other stages',
    PP + SRC + 'from = ["sink"]\n' + SINK,
)
add(
    "79_auto_start_class_producer",
    '79_auto_start_class_producer/src/call: auto_start calls corpus_mods:SourceNeeds.__call__() without arguments, but it requires "since"',
    PP + SRC.replace("corpus_mods:produce", "corpus_mods:SourceNeeds") + SINK,
)
add(
    "80_routing_unknown_weight",
    '80_routing_unknown_weight/src/weights: "ghost" unknown stage; not a downstream stage of "src"',
    PP
    + SRC
    + 'to = ["a", "b"]\nfanout = "weighted"\nweights = { a = 1, b = 1, ghost = 2 }\n'
    + proc("a", extra='to = ["sink"]\n')
    + proc("b")
    + SINK,
)
add(
    "81_routing_to_other_level",
    '81_routing_to_other_level/src/to: "inner" is a stage of nested pipeline "box", but "src" is in the top level',
    PP
    + SRC
    + 'to = ["inner"]\n'
    + '[[stage]]\nname = "box"\nkind = "pipeline"\n[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n'
    + SINK,
)
add(
    "82_pipeline_key_in_a_stage",
    ':11: 82_pipeline_key_in_a_stage/sink/description: unknown key "description" ("description" is a pipeline key: put it at the top of the file, before the first [[stage]])',
    PP + SRC + SINK + 'description = "written after the stages, so it belongs to the last one"\n',
)
add(
    "83_stage_key_at_the_top",
    ':3: 83_stage_key_at_the_top/threads: unknown key "threads" ("threads" is a stage key: put it inside a [[stage]])',
    PP + "threads = 4\n" + SRC + SINK,
)
add(
    "84_threads_on_nested_pipeline",
    '84_threads_on_nested_pipeline/box/threads: "threads" only applies to kind = "producer", "processor" or "consumer" (this stage\'s kind is "pipeline"); a nested pipeline\'s own budget is max_threads',
    PP
    + SRC
    + '[[stage]]\nname = "box"\nkind = "pipeline"\nthreads = 4\n[[stage.stage]]\nname = "inner"\ncall = "corpus_mods:process"\n'
    + SINK,
)
add(
    "85_rate_limit_bad_unit",
    ':10: 85_rate_limit_bad_unit/work/rate_limit: must be a rate like "10/s", "600/min" or "5000/h" (an integer >= 1 per s, min or h), got string "10/m" (did you mean "10/min"?)',
    PP + SRC + proc(extra='rate_limit = "10/m"\n') + SINK,
)
add(
    "86_priority_out_of_range",
    ":7: 86_priority_out_of_range/src/priority: must be an integer from -10 to 10, got integer 20",
    PP + SRC + "priority = 20\n" + SINK,
)

for f in OUT.glob("*.toml"):
    f.unlink()
for name, (expects, body) in C.items():
    head = "".join(f"# expect: {e}\n" for e in expects)
    (OUT / f"{name}.toml").write_text(head + body)
# a file that is not UTF-8
(OUT / "78_not_utf8.toml").write_bytes(
    b"# expect: :3: 78_not_utf8: the file is not valid UTF-8\n"
    + PP.encode()
    + b'description = "caf\xe9"\n'
    + SRC.encode()
    + SINK.encode()
)
print(f"wrote {len(C) + 1} files to {OUT}")
