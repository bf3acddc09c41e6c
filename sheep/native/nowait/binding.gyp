{
  "targets": [
    {
      "target_name": "nowait",
      "sources": ["src/nowait.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
