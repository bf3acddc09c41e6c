export const SHEEP_VERSION = '0.1.0';
