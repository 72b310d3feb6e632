"""Dashboard pages, one module per page; Dash imports them when an app is created."""
