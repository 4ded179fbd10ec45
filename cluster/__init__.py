"""Cluster views: node clients, discovery, fan-out and the cluster pages."""
