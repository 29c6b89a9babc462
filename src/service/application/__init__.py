"""Application services: one per area of the API (workspaces, organizations, members,
prompts, schedules, runs, files, service keys).

Each method opens the unit of work its call needs (`Database.read` for the hot reads, a
read-only or a writing transaction otherwise), calls the domain, and returns plain views:
no ORM row and no choice of read path reaches a caller. The gRPC servicers, the HTTP side and
the CLI call them; this package imports the domain and the database, never grpc or the
generated messages. `services.Services` gathers them; `service.app.App` builds it once.
"""
