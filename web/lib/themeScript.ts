// Set in <head> before the first paint (app/layout.tsx is a server component, so this
// file imports nothing from React): the stored theme, if the reader chose one.

export const THEME_STORAGE_KEY = "monkey.theme";

export const THEME_SCRIPT = `try{var t=localStorage.getItem("${THEME_STORAGE_KEY}");if(t==="light"||t==="dark")document.documentElement.dataset.theme=t}catch(e){}`;
