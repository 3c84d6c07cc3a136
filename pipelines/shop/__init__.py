"""The bundled example: a shop's sources, its SQLMesh project and its report. Platform code never
imports it; ``pipelines/defs/shop/`` declares it, and deleting that folder leaves it out."""
