{
  "targets": [
    {
      "target_name": "fileio",
      "sources": ["src/fileio.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
