"use client";

// A button for what cannot be undone (cancel, delete): it asks first, with the safe
// answer focused, so that Enter after a stray click changes nothing.

import { useEffect, useRef, useState } from "react";

export default function ConfirmButton(props: {
  label: string;
  /** The question, as the group's name and its text. */
  question: string;
  detail?: string;
  yes: string;
  no: string;
  busyLabel?: string;
  busy?: boolean;
  disabled?: boolean;
  onConfirm: () => void;
}) {
  const [asking, setAsking] = useState(false);
  const keepRef = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (asking) keepRef.current?.focus();
  }, [asking]);
  if (asking && !props.disabled) {
    return (
      <div className="confirm" role="group" aria-label={props.question}>
        <span>
          {props.question}
          {props.detail ? ` ${props.detail}` : ""}
        </span>
        <button
          type="button"
          className="danger"
          onClick={() => {
            setAsking(false);
            props.onConfirm();
          }}
        >
          {props.yes}
        </button>
        <button type="button" className="secondary" ref={keepRef} onClick={() => setAsking(false)}>
          {props.no}
        </button>
      </div>
    );
  }
  return (
    <button type="button" className="danger" onClick={() => setAsking(true)} disabled={props.busy || props.disabled}>
      {props.busy && props.busyLabel ? props.busyLabel : props.label}
    </button>
  );
}
