"""HTTP: routes, wire schemas, error rendering and authentication."""
