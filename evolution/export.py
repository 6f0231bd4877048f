"""Export a run's evolution tree as JSON and GraphML, for plotting and graph tools (Gephi, yEd).

  python -m genesys_jax.cli.export --workdir=DIR [--out=PATH_PREFIX]

writes PATH_PREFIX.json and PATH_PREFIX.graphml (default DIR/evolution_tree.*), each atomically.
JSON: {"nodes": [{id, seq, operator, description, status, tree, metrics: {rung: metrics}}],
       "edges": [{source: parent, target: child, operator, position}]}.
GraphML carries the same attributes as typed <key>s; metrics as a JSON string plus one numeric
`val_bpb@RUNG` attribute per rung so tools can colour nodes by fitness. A missing workdir or store
is a one-line error and exit status 2. Opening an older store migrates it (see evolution.store).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Any

from evolution.store import Store, StoreError
from gab import atomic

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
GRAPHML_XSD = "http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd"
NODE_ATTRS = (("seq", "int"), ("operator", "string"), ("description", "string"), ("status", "string"),
              ("tree", "string"), ("metrics", "string"))
EDGE_ATTRS = (("operator", "string"), ("position", "int"))
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def evolution_tree(store: Store) -> dict[str, Any]:
  """Designs as nodes (creation order) and parent -> child edges between stored designs."""
  metrics = store.metrics_by_design()
  designs = store.designs()
  operator = {d["id"]: d["operator"] for d in designs}
  nodes = [{"id": d["id"], "seq": d["seq"], "operator": d["operator"], "description": d["description"],
            "status": d["status"], "tree": json.loads(d["tree"]), "metrics": metrics.get(d["id"], {})}
           for d in designs]
  edges = [{"source": e["parent_id"], "target": e["child_id"], "operator": operator[e["child_id"]],
            "position": e["position"]}
           for e in store.lineage() if e["parent_id"] in operator]
  return {"nodes": nodes, "edges": edges}


def to_graphml(tree: dict[str, Any]) -> bytes:
  """The tree as a GraphML document (directed graph, typed attribute keys declared up front)."""
  rungs = sorted({rung for node in tree["nodes"] for rung in node["metrics"]})
  ET.register_namespace("", GRAPHML_NS)
  ET.register_namespace("xsi", XSI_NS)
  q = _qualified
  root = ET.Element(q("graphml"), {f"{{{XSI_NS}}}schemaLocation": f"{GRAPHML_NS} {GRAPHML_XSD}"})
  keys = {}
  rung_attrs = tuple((f"val_bpb@{r}", "double") for r in rungs)
  for domain, attrs in (("node", NODE_ATTRS + rung_attrs), ("edge", EDGE_ATTRS)):
    for name, kind in attrs:
      key_id = f"d{len(keys)}"
      keys[domain, name] = key_id
      ET.SubElement(root, q("key"), {"id": key_id, "for": domain, "attr.name": name, "attr.type": kind})
  graph = ET.SubElement(root, q("graph"), {"id": "evolution", "edgedefault": "directed"})

  def data(parent: ET.Element, domain: str, name: str, value: Any) -> None:
    if value is None:
      return
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    ET.SubElement(parent, q("data"), {"key": keys[domain, name]}).text = _NOT_XML.sub("\ufffd", text)

  for node in tree["nodes"]:
    element = ET.SubElement(graph, q("node"), {"id": node["id"]})
    for name, _ in NODE_ATTRS:
      data(element, "node", name, node[name])
    for rung, m in sorted(node["metrics"].items()):
      data(element, "node", f"val_bpb@{rung}", m.get("val_bpb"))
  for i, edge in enumerate(tree["edges"]):
    element = ET.SubElement(graph, q("edge"), {"id": f"e{i}", "source": edge["source"],
                                                "target": edge["target"]})
    for name, _ in EDGE_ATTRS:
      data(element, "edge", name, edge[name])
  ET.indent(root)
  return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def _qualified(tag: str) -> str:
  return f"{{{GRAPHML_NS}}}{tag}"


def export(workdir: str, out_prefix: str | None = None) -> tuple[str, str, dict[str, Any]]:
  """Write the JSON and GraphML exports of `workdir`'s store; returns their paths and the tree."""
  db = os.path.join(workdir, "evolution.db")
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist")
  if not os.path.isfile(db):
    raise FileNotFoundError(f"no evolution.db in {workdir}: is it an evolution run's workdir?")
  with Store(db) as store:
    tree = evolution_tree(store)
  prefix = out_prefix or os.path.join(workdir, "evolution_tree")
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  json_path, graphml_path = prefix + ".json", prefix + ".graphml"
  atomic.write(json_path, json.dumps(tree, indent=1, sort_keys=True) + "\n")
  atomic.write(graphml_path, to_graphml(tree))
  return json_path, graphml_path, tree

