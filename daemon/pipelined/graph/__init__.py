"""The routing graph of a pipeline: `model` (Graph, Node, Edge, GraphResult), `routing`
(`build_graph`: routing rules and nested pipelines), `limits` (threads/processes per stage),
`render` (JSON, Mermaid, DOT) and `check` (a file checked completely, routing included).
"""
