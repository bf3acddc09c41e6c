{
  "targets": [
    {
      "target_name": "cpg",
      "sources": ["src/cpg.c"],
      "libraries": ["-lcpg"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
