"""asyncio transports: PVA (and later CA) server and client endpoints, UDP search and
beacons, network configuration.  The only layer that opens sockets (design.md §1)."""
