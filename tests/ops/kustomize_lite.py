#!/usr/bin/env python3
"""Renders the subset of kustomize that k8s/ uses, for machines without a kustomize binary.

    kustomize_lite.py k8s/overlays/example > rendered.yaml

Supported: `resources` (files and directories holding a kustomization.yaml), `namespace`,
`labels` (pairs, includeSelectors false: metadata.labels only), `images` (newName, newTag,
digest), `patches` with `path` (strategic merge: maps merged, lists of maps merged by
`name`, other lists replaced). Anything else in a kustomization.yaml is an error, so a
feature used in k8s/ but missing here is noticed instead of silently dropped. The output is
compared with `kubectl kustomize` where one exists (tests/ops/validate_k8s.sh).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


class KustomizeError(Exception):
    pass


def build(directory: Path) -> list[dict]:
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")
    objects: list[dict] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{kfile}: only `patches: - path:` is supported")
        apply_patch(objects, yaml.safe_load((directory / patch["path"]).read_text()), kfile)
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{kfile}: labels with selectors/templates are not supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for obj in objects:
            set_images(obj, image)
    return objects


def key(obj: dict) -> tuple:
    return (obj.get("apiVersion"), obj.get("kind"), obj.get("metadata", {}).get("name"))


def apply_patch(objects: list[dict], patch: dict, where: Path) -> None:
    for i, obj in enumerate(objects):
        if key(obj)[1:] == key(patch)[1:]:
            objects[i] = merge(obj, patch)
            return
    raise KustomizeError(f"{where}: patch target {key(patch)} not found")


def merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((j for j, x in enumerate(out) if x["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def split_image(ref: str) -> tuple[str, str]:
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon:]
    return ref, ""


def set_images(node, image: dict) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    name, suffix = split_image(c.get("image", ""))
                    if name == image["name"]:
                        new_name = image.get("newName", name)
                        if "digest" in image:
                            suffix = "@" + image["digest"]
                        elif "newTag" in image:
                            suffix = ":" + str(image["newTag"])
                        c["image"] = new_name + suffix
            else:
                set_images(v, image)
    elif isinstance(node, list):
        for v in node:
            set_images(v, image)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        objects = build(Path(sys.argv[1]))
    except (KustomizeError, OSError, yaml.YAMLError) as e:
        print(f"kustomize_lite: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
