"""OpenAI-compatible files: upload (purpose `batch`), read, list, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, SessionDep, SessionMakerDep, SettingsDep
from api.responses import FileDeleted, FileList, FileObject, errors
from api.services import files as svc

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject,
             response_model_exclude_none=True, responses=errors(413))
async def upload_file(
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form(json_schema_extra={"enum": list(svc.UPLOAD_PURPOSES)})],
    anchor: Annotated[str | None, Form(alias="expires_after[anchor]", max_length=32,
                                       json_schema_extra={"enum": ["created_at"]})] = None,
    seconds: Annotated[str | None, Form(
        alias="expires_after[seconds]", max_length=16,
        description="Delete the file this many seconds after the upload (3600 to "
                    "2592000); unset: after MONKEY_RETENTION_DAYS.")] = None,
) -> dict:
    try:
        f = await svc.store_upload(session=session, settings=settings, principal=principal,
                                   upload=file, purpose=purpose,
                                   expires_after=svc.expiry(anchor, seconds))
    finally:
        await file.close()
    return svc.file_object(f, settings)


@router.get("", response_model=FileList, response_model_exclude_none=True)
async def list_files(
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    return await svc.list_files(session=session, settings=settings, principal=principal,
                                purpose=purpose, limit=limit, after=after)


@router.get("/{file_id}", response_model=FileObject,
             response_model_exclude_none=True, responses=errors(404))
async def get_file(file_id: str, session: SessionDep, settings: SettingsDep,
                   principal: PrincipalDep) -> dict:
    return svc.file_object(await svc.get_file(session=session, principal=principal,
                                              file_id=file_id), settings)


@router.get("/{file_id}/content", response_class=StreamingResponse, responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                              "format": "binary"}}},
          "description": "The file's bytes."},
    **errors(404),
})
async def file_content(file_id: str, session: SessionDep, sessions: SessionMakerDep,
                       principal: PrincipalDep) -> StreamingResponse:
    f = await svc.get_file(session=session, principal=principal, file_id=file_id)
    await session.close()  # the body streams with a session per part
    return StreamingResponse(
        svc.iter_parts(sessions=sessions, file_id=f.id), media_type="application/octet-stream",
        headers={"Content-Length": str(f.size),
                 "Content-Disposition": f'attachment; filename="{_header_safe(f.filename)}"'},
    )


def _header_safe(name: str) -> str:
    # Header values are latin-1 and the filename sits in quotes: keep plain ASCII only.
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)


@router.delete("/{file_id}", response_model=FileDeleted, responses=errors(404, 409))
async def delete_file(file_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    return await svc.delete_file(session=session, principal=principal, file_id=file_id)
