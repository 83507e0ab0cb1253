"""The graph port: one small client interface with a FalkorDB and a Neo4j adapter."""
