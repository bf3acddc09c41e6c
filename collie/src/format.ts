// Pure formatters for every table dog prints (spec §15 and the transcript).
// They live in @sheepdog/common/text, shared with sheepfs so that its files
// show the same bytes as collie; re-exported here for collie's modules.
export * from '@sheepdog/common/text';
