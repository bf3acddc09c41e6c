// @sheepdog/common/text: the text collie prints and sheepfs serves.
export * from './output.js';
export * from './format.js';
