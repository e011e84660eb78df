module xshm.dev/specreader

go 1.26
