src/a/b/deep.c
