// keydialog.js: asks for an API key when the server answers 401. The key
// is typed into a password field and handed back; api.js keeps it in
// sessionStorage (this tab only, gone when it closes).

/** Shows the dialog; resolves with the key, or null if the user cancels. */
export function askKey(serverMessage) {
  const dlg = document.getElementById('key-dialog');
  const form = dlg.querySelector('form');
  const input = dlg.querySelector('input');
  const why = dlg.querySelector('.why');
  why.textContent = serverMessage || 'This server needs an API key.';
  input.value = '';
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      dlg.removeEventListener('cancel', onCancel);
      cancelBtn.removeEventListener('click', onCancel);
      if (dlg.open) dlg.close();
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const k = input.value.trim();
      if (k) done(k);
    };
    const onCancel = (e) => { e.preventDefault(); done(null); };
    const cancelBtn = dlg.querySelector('button[value=cancel]');
    form.addEventListener('submit', onSubmit);
    dlg.addEventListener('cancel', onCancel);
    cancelBtn.addEventListener('click', onCancel);
    dlg.showModal();
    input.focus();
  });
}
