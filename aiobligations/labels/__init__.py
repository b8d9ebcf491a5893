"""Labels for synthetic content (Art. 38(2), 70(1)): GB 45438-2025 implicit and explicit labels, C2PA
content credentials and watermarks. Being built: see the modules in this package."""

__all__: list[str] = []
