{
  "targets": [
    {
      "target_name": "fileio",
      "sources": ["src/fileio.c", "src/hugebuf.c", "src/xattr.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
