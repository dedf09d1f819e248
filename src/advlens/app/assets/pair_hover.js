/* advlens: tell the server which Image Grid card the pointer rests on (at least HOVER_MS), so that it can start
   that pair's vulnerability maps before the click. The server checks the id; nothing else is sent. */
(function () {
    const HOVER_MS = 150;
    const STORE = "hover-pair-store";
    let timer = null;
    let sent = null;
    const cardOf = (node) => (node && node.closest ? node.closest(".pair-card") : null);
    document.addEventListener("mouseover", (event) => {
        const card = cardOf(event.target);
        if (!card || card.id === sent) {
            return;
        }
        clearTimeout(timer);
        timer = setTimeout(() => {
            let id;
            try {
                id = JSON.parse(card.id);
            } catch (error) {
                return;
            }
            const clientside = window.dash_clientside;
            if (clientside && clientside.set_props) {  // cards exist only on the page that holds the store
                sent = card.id;
                clientside.set_props(STORE, {data: id.pair});
            }
        }, HOVER_MS);
    });
    document.addEventListener("mouseout", (event) => {
        const card = cardOf(event.target);
        if (card && !card.contains(event.relatedTarget)) {
            clearTimeout(timer);
        }
    });
})();
